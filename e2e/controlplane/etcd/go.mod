module kube-baseline.local/controlplane/etcd

go 1.26.0
