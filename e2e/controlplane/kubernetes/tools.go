//go:build tools

// Package tools pins the Kubernetes commands the local control plane is built from.
// build.sh adds the k8s.io/kubernetes requirement and the staging-module replaces for the
// version in ../versions.env, then builds these packages into the binary cache.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
