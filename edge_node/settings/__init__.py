"""The configuration's sections, grouped by what they configure (built by edge_node.config)."""
