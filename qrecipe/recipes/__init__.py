"""Recipes as data: the schema, the recipe sources (project, folders, packs), the one safe
loader every recipe file passes, composition with Hydra, metadata and locks. Never imports torch."""
