// Command formula evaluates a KEDA scalingModifiers formula the way KEDA does, for the chart's tests.
//
// KEDA (pkg/scaling/modifiers, apis/keda/v1alpha1/scaledobject_webhook.go) wraps the formula in
// float(...), compiles it with expr-lang against every named trigger, and runs it on the triggers'
// values. This does the same with the same expr-lang version, so a formula that passes here
// compiles and gives these numbers in the cluster. Input on stdin, JSON:
//
//	{"formula": "...", "triggers": ["lag", ...], "cases": [{"lag": 1200, ...}, ...]}
//
// Output on stdout, JSON: {"results": [2, ...]} or {"error": "..."} (exit code 1).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/expr-lang/expr"
)

type input struct {
	Formula  string               `json:"formula"`
	Triggers []string             `json:"triggers"`
	Cases    []map[string]float64 `json:"cases"`
}

func fail(err error) {
	_ = json.NewEncoder(os.Stdout).Encode(map[string]string{"error": err.Error()})
	os.Exit(1)
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail(fmt.Errorf("reading the input: %w", err))
	}
	formula := in.Formula
	if !strings.HasPrefix(formula, "float(") { // KEDA's castToFloatIfNecessary, for formulas without ??
		formula = "float(" + formula + ")"
	}
	env := map[string]float64{}
	for _, name := range in.Triggers {
		env[name] = -1 // KEDA's dummy value: the formula must also run on it
	}
	program, err := expr.Compile(formula, expr.Env(env))
	if err != nil {
		fail(err)
	}
	if _, err := expr.Run(program, env); err != nil {
		fail(err)
	}
	results := []float64{}
	for _, values := range in.Cases {
		out, err := expr.Run(program, values)
		if err != nil {
			fail(err)
		}
		value, ok := out.(float64)
		if !ok {
			fail(fmt.Errorf("formula returned %T (%v), not a number", out, out))
		}
		results = append(results, value)
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string][]float64{"results": results})
}
