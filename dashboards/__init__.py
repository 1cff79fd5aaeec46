"""Reports and dashboard artifacts built from what shrink.search stores (to come: see the reports issue)."""
