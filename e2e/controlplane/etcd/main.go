// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 at the version in
// ../versions.env. It lives in its own module so etcd's dependency versions never mix with
// Kubernetes'.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
