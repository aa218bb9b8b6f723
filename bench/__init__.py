"""scabench's harness: configs, grids, runner, results store, synthetic studies and the CLI."""
