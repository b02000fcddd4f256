"""The MFPO data pipeline: items -> keywords -> regions -> perturbation -> records."""
