"""Layer 3: detection policy (arrays in, decisions out)."""
