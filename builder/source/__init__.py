"""Container input: references, fetching with skopeo, the blob cache, verification, classification."""
