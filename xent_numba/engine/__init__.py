"""Running a scoring job: one batch, the local streaming pipeline, the Dask engine, the warm-up."""
