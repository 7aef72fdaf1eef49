package containertest

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// RemoveCgroups removes the cgroup at path and everything below it in every mounted hierarchy
// (v1 controllers and v2): a runtime creates a pod's parents from its cgroup parent and leaves them,
// as the kubelet would remove them.
func RemoveCgroups(path string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var errs []error
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		i := slices.Index(fields, "-")
		if i < 5 || i+1 >= len(fields) || (fields[i+1] != "cgroup" && fields[i+1] != "cgroup2") {
			continue
		}
		top := filepath.Join(fields[4], path)
		var dirs []string
		filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, d := range slices.Backward(dirs) {
			if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
