module streamlattice/deploy/helm/formula

go 1.22

// the version KEDA's go.mod requires (tests/test_helm.py checks it against tools.env's KEDA_VERSION)
require github.com/expr-lang/expr v1.17.8
