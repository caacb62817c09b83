// Command opsbot is a ChatOps approval bot; see README.md.
package main

import (
	_ "embed"
	"os"

	"opsbot/bot"
)

//go:embed opsbot.example.yaml
var exampleConfig []byte

func main() {
	os.Exit(bot.Main(os.Args[1:], exampleConfig, os.Stdout, os.Stderr))
}
