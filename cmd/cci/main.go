// Command cci is the CCI serverless container engine: control plane, host
// agent and tools in one binary.
package main

import (
	"os"

	"github.com/cci-project/cci/internal/cli"
)

func main() {
	os.Exit(cli.Execute())
}
