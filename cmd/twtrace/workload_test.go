package main

import (
	"errors"
	"testing"
)

func TestWorkloadFlagsRefused(t *testing.T) {
	for _, tt := range []struct {
		f    workloadFlags
		want string
	}{
		{workloadFlags{cgroup: "/a", pod: "ns/p"}, "--cgroup, --pod and --container each choose one subtree: give one of them"},
		{workloadFlags{pod: "ns/", container: "ab"}, "--cgroup, --pod and --container each choose one subtree: give one of them"},
		{workloadFlags{pod: "ns/"}, `--pod "ns/": want NAMESPACE/NAME or the pod's UID`},
		{workloadFlags{pod: "/name"}, `--pod "/name": want NAMESPACE/NAME or the pod's UID`},
		{workloadFlags{pod: "a/b/c"}, `--pod "a/b/c": want NAMESPACE/NAME or the pod's UID`},
		{workloadFlags{container: "web-1"}, `--container "web-1": a container id is hexadecimal`},
		{workloadFlags{top: -1}, `--top-workloads -1: list at least one workload`},
	} {
		if tt.f.top == 0 {
			tt.f.top = defaultTopWorkloads
		}
		err := tt.f.validate()
		var ue usageError
		if !errors.As(err, &ue) || err.Error() != tt.want {
			t.Errorf("%+v: %v, want the usage error %q", tt.f, err, tt.want)
		}
	}
	for _, ok := range []workloadFlags{{}, {cgroup: "/system.slice/nginx.service"}, {pod: "shop/cart"},
		{pod: "0f6ad3b4-1c3e-4b8f-9a1d-7e2c5b8a9d10"}, {container: "5C1C5D1A3F1F"}, {top: 1}} {
		if ok.top == 0 {
			ok.top = defaultTopWorkloads
		}
		if err := ok.validate(); err != nil {
			t.Errorf("%+v refused: %v", ok, err)
		}
	}
}
