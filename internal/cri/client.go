// Package cri reads which pods and containers run on the node from its container runtime's CRI
// API (containerd, CRI-O, cri-dockerd), with read-only calls only: Version, ListPodSandbox,
// ListContainers.
package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Sockets are where runtimes listen by default, in the order Detect tries them.
var Sockets = []string{
	"/run/containerd/containerd.sock",
	"/run/crio/crio.sock",
	"/run/k3s/containerd/containerd.sock",
	"/run/cri-dockerd.sock",
	"/var/run/containerd/containerd.sock",
	"/var/run/crio/crio.sock",
	"/var/run/cri-dockerd.sock",
}

// ErrNoSocket: none of the usual sockets exists here.
var ErrNoSocket = errors.New("no container runtime socket found")

// Detect returns the first of Sockets that exists as a socket.
func Detect() (string, error) {
	for _, s := range Sockets {
		if fi, err := os.Stat(s); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return s, nil
		}
	}
	return "", fmt.Errorf("%w (looked for %v; name one with --cri-socket)", ErrNoSocket, Sockets)
}

// Client talks to one runtime.
type Client struct {
	Socket  string
	Runtime string // runtime name and version, from Version
	conn    *grpc.ClientConn
	rt      runtime.RuntimeServiceClient
}

// Dial connects to the runtime at socket and checks that it serves the CRI API v1.
func Dial(ctx context.Context, socket string) (*Client, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("container runtime at %s: %w", socket, err)
	}
	c := &Client{Socket: socket, conn: conn, rt: runtime.NewRuntimeServiceClient(conn)}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := c.rt.Version(ctx, &runtime.VersionRequest{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("container runtime at %s does not answer the CRI API v1: %w", socket, err)
	}
	c.Runtime = v.RuntimeName + " " + v.RuntimeVersion
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Pod is a pod sandbox as the runtime knows it.
type Pod struct {
	UID, Namespace, Name string
	SandboxID            string
}

// Container is a container of a pod.
type Container struct {
	ID, Name  string
	SandboxID string
	PodUID    string
}

// Snapshot is what the runtime runs at one moment: pods by UID, containers and sandboxes by id.
type Snapshot struct {
	Pods       map[string]Pod       // by pod UID
	Containers map[string]Container // by container id
	Sandboxes  map[string]string    // sandbox id -> pod UID
}

// Snapshot lists every pod sandbox and container, whatever their state (an exited container's
// sockets may still be closing).
func (c *Client) Snapshot(ctx context.Context) (Snapshot, error) {
	pods, err := c.rt.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if err != nil {
		return Snapshot{}, fmt.Errorf("list pod sandboxes on %s: %w", c.Socket, err)
	}
	ctrs, err := c.rt.ListContainers(ctx, &runtime.ListContainersRequest{})
	if err != nil {
		return Snapshot{}, fmt.Errorf("list containers on %s: %w", c.Socket, err)
	}
	s := Snapshot{
		Pods:       make(map[string]Pod, len(pods.Items)),
		Containers: make(map[string]Container, len(ctrs.Containers)),
		Sandboxes:  make(map[string]string, len(pods.Items)),
	}
	newest := make(map[string]int64, len(pods.Items))
	for _, p := range pods.Items {
		m := p.GetMetadata()
		if m.GetUid() == "" {
			continue
		}
		s.Sandboxes[p.Id] = m.Uid
		// A pod whose sandbox was recreated has several (attempts); the newest one names it.
		if t, seen := newest[m.Uid]; seen && t >= p.CreatedAt {
			continue
		}
		newest[m.Uid] = p.CreatedAt
		s.Pods[m.Uid] = Pod{UID: m.Uid, Namespace: m.Namespace, Name: m.Name, SandboxID: p.Id}
	}
	for _, ct := range ctrs.Containers {
		s.Containers[ct.Id] = Container{
			ID:        ct.Id,
			Name:      ct.GetMetadata().GetName(),
			SandboxID: ct.PodSandboxId,
			PodUID:    s.Sandboxes[ct.PodSandboxId],
		}
	}
	return s, nil
}
