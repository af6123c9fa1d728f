"""Tools around the core, not part of it: the benchmark (`dcgan bench`), the many-visitors load test
(`dcgan crowd`) and the recipe sweep (`dcgan sweep`, or `python -m dcgan.tools.sweep`). Nothing in
`dcgan/` outside this folder imports from here; these modules import the core like any user would."""
