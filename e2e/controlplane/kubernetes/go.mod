module kube-baseline.local/controlplane/kubernetes

go 1.26.0
