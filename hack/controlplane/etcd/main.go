// Command etcd is the upstream etcd server, built from go.etcd.io/etcd/server/v3 through a
// wrapper module because etcd's own main module relies on relative replace directives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
