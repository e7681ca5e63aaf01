"""Writing OCI image layouts and oci-archives (the reading side lives in builder.source)."""
