"""Helpers shared by the test tiers (lab kit, emulator and node helpers, schema checks)."""
