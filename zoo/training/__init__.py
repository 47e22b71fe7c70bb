"""Generic training machinery: strategies and the custom loop. Knows no model family."""
