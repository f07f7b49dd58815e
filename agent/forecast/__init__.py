"""Forecast: the model bundle (manifest, TFLite file), the interpreter runtime, and the
forecaster that turns a window into values for each horizon step."""
