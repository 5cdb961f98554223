"""data_manifests: corpus adapters that turn a corpus in its native layout into a manifest table."""
