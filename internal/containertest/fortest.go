package containertest

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// StartForTest starts a private containerd for t and stops it when t ends.
func StartForTest(ctx context.Context, t testing.TB) *Containerd {
	t.Helper()
	ctd, err := StartContainerd(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ctd.Stop(); err != nil {
			t.Error(err)
		}
	})
	return ctd
}

// RunPodForTest runs the pod shop/cart-PID, with a new UID, in a cgroup tree of its own,
// /<prefix>-PID/kubepods/besteffort/pod<UID>, as the kubelet's cgroupfs driver makes it;
// the pod and the tree are removed when t ends. It returns the pod and its sandbox's id.
func (c *Containerd) RunPodForTest(ctx context.Context, t testing.TB, prefix string) (Pod, string) {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	uid := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	top := fmt.Sprintf("/%s-%d", prefix, os.Getpid())
	pod := Pod{Namespace: "shop", Name: fmt.Sprintf("cart-%d", os.Getpid()), UID: uid,
		CgroupParent: top + "/kubepods/besteffort/pod" + uid}
	t.Cleanup(func() {
		if err := RemoveCgroups(top); err != nil {
			t.Error(err)
		}
	})
	podID, err := c.RunPod(ctx, pod)
	if err != nil {
		t.Fatalf("%v (containerd log: %s)", err, filepath.Join(c.Dir, "containerd.log"))
	}
	t.Cleanup(func() { c.RemovePod(context.Background(), podID) })
	return pod, podID
}
