"""Prefect wiring of the stages in tasks/, and the `shipyard` command line. No data logic here."""
