"""Pipeline stages: plain typed functions plus a small main() per stage (no Prefect, no serving)."""
