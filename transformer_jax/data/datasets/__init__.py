"""One module (or package) per dataset; each registers a `DatasetSpec` when imported."""
