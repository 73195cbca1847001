"""memberlink's Prefect flow and command-line interface: orchestration only."""
