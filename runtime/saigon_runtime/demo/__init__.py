"""The embedded demo: a tiny base model and LoRA adapters built locally, with no downloads."""

from saigon_runtime.demo.build import FULL, MINI, DemoAssets, DemoScale, build_demo_assets, default_cache_dir
from saigon_runtime.demo.corpus import GENERATOR_VERSION

__all__ = ["FULL", "GENERATOR_VERSION", "MINI", "DemoAssets", "DemoScale", "build_demo_assets", "default_cache_dir"]
