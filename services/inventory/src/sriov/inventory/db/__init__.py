"""Everything that speaks SQL to the ``inventory`` schema lives in this package."""
