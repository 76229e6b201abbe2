"""Method plugins: one algorithm per module."""
