module opsbot

go 1.26

require (
	github.com/agnivade/levenshtein v1.2.2
	go.etcd.io/bbolt v1.5.0
	go.yaml.in/yaml/v3 v3.0.6
)

require golang.org/x/sys v0.45.0 // indirect
