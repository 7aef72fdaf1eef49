package workload

import "testing"

// Paths as real hosts show them in /proc/PID/cgroup (ids shortened to a few distinct ones).
const (
	id1  = "5c1c5d1a3f1f4f2a8d1e0b7c2a9e6d4b3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c"
	id2  = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1"
	uid  = "0f6ad3b4-1c3e-4b8f-9a1d-7e2c5b8a9d10"
	uidS = "0f6ad3b4_1c3e_4b8f_9a1d_7e2c5b8a9d10"
	// A static pod's UID is the hash of its manifest: 32 hex digits, no dashes.
	static = "5e2b1f0a7c8d9e0f1a2b3c4d5e6f7a8b"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		path string
		want Workload
	}{
		// systemd units
		{"/system.slice/nginx.service", Workload{Unit: "nginx.service"}},
		{"/system.slice/system-getty.slice/getty@tty1.service", Workload{Unit: "getty@tty1.service"}},
		{"/user.slice/user-1000.slice/session-3.scope", Workload{Unit: "session-3.scope"}},
		{"/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1f.scope", Workload{Unit: "vte-spawn-1f.scope"}},
		{"/user.slice/user-1000.slice/user@1000.service/init.scope", Workload{Unit: "init.scope"}},
		{"/system.slice/nginx.service/worker", Workload{Unit: "nginx.service"}}, // a delegated sub-cgroup
		{"/system.slice/run-u42.service", Workload{Unit: "run-u42.service"}},    // systemd-run
		{"/init.scope", Workload{Unit: "init.scope"}},
		{"/machine.slice/systemd-nspawn@web.service/payload", Workload{Unit: "systemd-nspawn@web.service"}},
		{"/system.slice", Workload{}},
		{"/", Workload{}},
		{"", Workload{}},
		{"/process_api/01b19659a77e827222ec0d8c654be473", Workload{}},

		// containers outside Kubernetes
		{"/system.slice/docker-" + id1 + ".scope", Workload{Runtime: "docker", ContainerID: id1}},
		{"/docker/" + id1, Workload{Runtime: "docker", ContainerID: id1}},
		{"/system.slice/containerd.service/default/" + id1, Workload{ContainerID: id1}}, // ctr run, cgroupfs
		{"/k8s.io/" + id1, Workload{ContainerID: id1}},
		{"/machine.slice/libpod-" + id1 + ".scope", Workload{Runtime: "podman", ContainerID: id1}},
		{"/machine.slice/libpod-" + id1 + ".scope/container", Workload{Runtime: "podman", ContainerID: id1}},
		{"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id1 + ".scope", Workload{Runtime: "podman", ContainerID: id1}},
		{"/libpod_parent/libpod-" + id1, Workload{Runtime: "podman", ContainerID: id1}},
		{"/machine.slice/libpod-conmon-" + id1 + ".scope", Workload{Unit: "libpod-conmon-" + id1 + ".scope"}},
		{"/actions_job/" + id1, Workload{ContainerID: id1}},
		{"/system.slice/docker-" + id1 + ".scope/docker/" + id2, Workload{Runtime: "docker", ContainerID: id1}}, // docker in docker

		// kubelet, systemd driver
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidS + ".slice/cri-containerd-" + id1 + ".scope",
			Workload{Runtime: "containerd", ContainerID: id1, PodUID: uid}},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidS + ".slice/crio-" + id1 + ".scope",
			Workload{Runtime: "cri-o", ContainerID: id1, PodUID: uid}},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidS + ".slice/crio-" + id1 + ".scope/container",
			Workload{Runtime: "cri-o", ContainerID: id1, PodUID: uid}},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidS + ".slice/crio-conmon-" + id1 + ".scope",
			Workload{PodUID: uid}},
		{"/kubepods.slice/kubepods-pod" + uidS + ".slice/cri-containerd-" + id1 + ".scope", // Guaranteed QoS
			Workload{Runtime: "containerd", ContainerID: id1, PodUID: uid}},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidS + ".slice/docker-" + id1 + ".scope", // cri-dockerd
			Workload{Runtime: "docker", ContainerID: id1, PodUID: uid}},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + static + ".slice/cri-containerd-" + id1 + ".scope",
			Workload{Runtime: "containerd", ContainerID: id1, PodUID: static}},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidS + ".slice", Workload{PodUID: uid}},
		{"/kubepods.slice/kubepods-burstable.slice", Workload{}},
		// kind: the node is a docker container, the kubelet's root is /kubelet
		{"/system.slice/docker-" + id2 + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidS + ".slice/cri-containerd-" + id1 + ".scope",
			Workload{Runtime: "containerd", ContainerID: id1, PodUID: uid}},
		{"/system.slice/docker-" + id2 + ".scope/kubelet.slice/kubelet.service", Workload{Runtime: "docker", ContainerID: id2}},

		// kubelet, cgroupfs driver
		{"/kubepods/burstable/pod" + uid + "/" + id1, Workload{ContainerID: id1, PodUID: uid}},
		{"/kubepods/besteffort/pod" + uid + "/" + id1, Workload{ContainerID: id1, PodUID: uid}},
		{"/kubepods/pod" + uid + "/" + id1, Workload{ContainerID: id1, PodUID: uid}},
		{"/kubepods/burstable/pod" + uid + "/crio-" + id1, Workload{Runtime: "cri-o", ContainerID: id1, PodUID: uid}},
		{"/kubepods/burstable/pod" + uid, Workload{PodUID: uid}},
		{"/kubelet/kubepods/burstable/pod" + uid + "/" + id1, Workload{ContainerID: id1, PodUID: uid}},
		{"/podcast.service", Workload{Unit: "podcast.service"}},
		{"/pod" + uid + "/" + id1, Workload{ContainerID: id1}}, // pod<uid> outside kubepods is not a kubelet pod
		// seen from inside a cgroup namespace
		{"/../../kubepods-burstable-pod" + uidS + ".slice/cri-containerd-" + id1 + ".scope", Workload{Runtime: "containerd", ContainerID: id1, PodUID: uid}},
	} {
		c.want.Cgroup = c.path
		if got := Parse(c.path); got != c.want {
			t.Errorf("Parse(%q)\n got %+v\nwant %+v", c.path, got, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidS + ".slice/cri-containerd-" + id1 + ".scope")
	f.Add("/system.slice/nginx.service")
	f.Fuzz(func(t *testing.T, p string) {
		w := Parse(p)
		if w.Cgroup != p || (w.Unit != "" && (w.ContainerID != "" || w.PodUID != "")) {
			t.Fatalf("Parse(%q) = %+v", p, w)
		}
	})
}

func TestName(t *testing.T) {
	for _, c := range []struct {
		w    Workload
		want string
	}{
		{Workload{PodNamespace: "shop", Pod: "cart", Container: "web", PodUID: uid, ContainerID: id1}, "shop/cart/web"},
		{Workload{PodNamespace: "shop", Pod: "cart", PodUID: uid, ContainerID: id1}, "shop/cart"},
		{Workload{PodUID: uid, ContainerID: id1}, "pod:" + uid},
		{Workload{Cgroup: "/system.slice/nginx.service", Unit: "nginx.service"}, "nginx.service"},
		{Workload{Runtime: "docker", ContainerID: id1}, "docker:" + id1[:12]},
		{Workload{ContainerID: id1}, "container:" + id1[:12]},
		{Workload{Cgroup: "/batch/job7"}, "/batch/job7"},
		{Workload{}, ""},
	} {
		if got := c.w.Name(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.w, got, c.want)
		}
	}
}
