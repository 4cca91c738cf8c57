"""The Docker tier's helpers: `dockerfile` writes a runtime stage that installs prebuilt wheels
only, `parse` reads Dockerfiles, `lint` finds what makes runtime images big or slow."""
