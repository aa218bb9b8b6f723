"""Tables and figures from scabench result folders (reads files, never trains)."""
