"""Market data: series and universes, read, validated and aligned (the only place that tells the two apart)."""
