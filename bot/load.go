package bot

import "io"

// LoadMain is replaced by the load tool.
func LoadMain(args []string, embedded []byte, stdout, stderr io.Writer) int { return 2 }
