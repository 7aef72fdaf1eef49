// Package containertest runs a real containerd with its CRI plugin for tests: it starts the daemon
// under a temporary directory (.ci/containerd/containerd.sh), imports images built locally from a static
// binary (no registry), and creates pods and containers through the CRI API as the kubelet would.
package containertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// SandboxImage is the image containerd's CRI plugin runs as every pod's sandbox (containerd.sh's
// SANDBOX_IMAGE), built here and imported: a name no registry serves, so nothing is ever pulled.
const SandboxImage = "twtrace.test/pause:1"

// AppImage is the image of the test containers: testapp (see testapp/main.go) as entrypoint.
const AppImage = "twtrace.test/app:1"

// Containerd is a running private containerd.
type Containerd struct {
	Dir    string // root of its state, config, CNI config and log
	Socket string // its gRPC (and CRI) socket
	CRI    cri.RuntimeServiceClient
	conn   *grpc.ClientConn
}

// Missing says what this machine lacks to run StartContainerd, "" when nothing: the test VMs of
// make vmtest hold neither containerd nor the repository; make test installs what the host needs.
func Missing() string {
	for _, cmd := range []string{"containerd", "ctr", "runc", "go"} {
		if _, err := exec.LookPath(cmd); err != nil {
			return "needs " + cmd + " (make test installs containerd, runc and the CNI plugins as root)"
		}
	}
	root, err := repoRoot()
	if err != nil {
		return err.Error()
	}
	if _, err := os.Stat(filepath.Join(root, ".ci/containerd/containerd.sh")); err != nil {
		return "needs the repository's .ci/containerd/containerd.sh: " + err.Error()
	}
	return ""
}

// StartContainerd starts containerd under a new temporary directory and imports the sandbox and
// test images, built from testapp with the go command. Stop it with Stop.
func StartContainerd(ctx context.Context) (*Containerd, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "twtrace-ctd-")
	if err != nil {
		return nil, err
	}
	c := &Containerd{Dir: dir, Socket: filepath.Join(dir, "containerd.sock")}
	start := exec.CommandContext(ctx, filepath.Join(root, ".ci/containerd/containerd.sh"), "start", dir)
	start.Env = append(os.Environ(), "SANDBOX_IMAGE="+SandboxImage)
	out, err := start.CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start containerd: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := c.importImages(ctx, root); err != nil {
		c.Stop()
		return nil, err
	}
	c.conn, err = grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("dial CRI: %w", err)
	}
	c.CRI = cri.NewRuntimeServiceClient(c.conn)
	return c, nil
}

func (c *Containerd) importImages(ctx context.Context, root string) error {
	bin := filepath.Join(c.Dir, "testapp")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./internal/containertest/testapp")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build testapp: %w: %s", err, out)
	}
	images := []struct {
		name       string
		entrypoint []string
	}{
		{SandboxImage, []string{"/app", "pause"}},
		{AppImage, []string{"/app"}},
	}
	for i, img := range images {
		archive := filepath.Join(c.Dir, fmt.Sprintf("image%d.tar", i))
		if err := WriteImageArchive(archive, bin, img.name, img.entrypoint); err != nil {
			return fmt.Errorf("build image %s: %w", img.name, err)
		}
		out, err := exec.CommandContext(ctx, "ctr", "--address", c.Socket, "-n", "k8s.io", "images", "import", archive).CombinedOutput()
		if err != nil {
			return fmt.Errorf("import image %s: %w: %s", img.name, err, out)
		}
	}
	return nil
}

// Stop removes every pod left, stops the daemon and removes its directory.
func (c *Containerd) Stop() error {
	if c.CRI != nil {
		ctx := context.Background()
		if pods, err := c.CRI.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{}); err == nil {
			for _, p := range pods.Items {
				c.RemovePod(ctx, p.Id)
			}
		}
		c.conn.Close()
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	out, err := exec.Command(filepath.Join(root, ".ci/containerd/containerd.sh"), "stop", c.Dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("stop containerd: %w: %s", err, out)
	}
	return nil
}

// Pod describes a pod to run: its Kubernetes identity and the cgroup parent the kubelet would give it.
type Pod struct {
	Namespace, Name, UID string
	CgroupParent         string // e.g. /kubepods/besteffort/pod<uid> (cgroupfs driver)
}

// RunPod creates and starts a pod sandbox with its own network namespace and returns its id.
func (c *Containerd) RunPod(ctx context.Context, p Pod) (string, error) {
	resp, err := c.CRI.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: p.config(c.Dir)})
	if err != nil {
		return "", fmt.Errorf("run pod sandbox %s/%s: %w", p.Namespace, p.Name, err)
	}
	return resp.PodSandboxId, nil
}

// RunContainer creates and starts a container of AppImage running testapp with args in the pod.
func (c *Containerd) RunContainer(ctx context.Context, podID string, p Pod, name string, args ...string) (string, error) {
	created, err := c.CRI.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId: podID,
		Config: &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: name},
			Image:    &cri.ImageSpec{Image: AppImage},
			Args:     args,
			LogPath:  name + ".log",
			Linux:    &cri.LinuxContainerConfig{},
		},
		SandboxConfig: p.config(c.Dir),
	})
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", name, err)
	}
	if _, err := c.CRI.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
		return "", fmt.Errorf("start container %s: %w", name, err)
	}
	return created.ContainerId, nil
}

// RemovePod stops and removes a pod sandbox with its containers.
func (c *Containerd) RemovePod(ctx context.Context, id string) error {
	if _, err := c.CRI.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("stop pod sandbox: %w", err)
	}
	if _, err := c.CRI.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("remove pod sandbox: %w", err)
	}
	return nil
}

func (p Pod) config(dir string) *cri.PodSandboxConfig {
	return &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: p.Name, Namespace: p.Namespace, Uid: p.UID},
		Hostname:     p.Name,
		LogDirectory: filepath.Join(dir, "pods", p.UID),
		Linux: &cri.LinuxPodSandboxConfig{
			CgroupParent: p.CgroupParent,
			SecurityContext: &cri.LinuxSandboxSecurityContext{
				NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_POD, Pid: cri.NamespaceMode_CONTAINER},
			},
		},
	}
}

// repoRoot finds the module root from this file's location, so tests of any package can start containerd.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("locate the repository: no caller information")
	}
	return filepath.Join(filepath.Dir(file), "..", ".."), nil
}
