"""Register maps, one TOML file per model (data, shipped with the package)."""
