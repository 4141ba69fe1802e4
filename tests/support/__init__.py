"""Helpers the tests share: paths and data, the Serve application fixture, the in-process app,
the scripted engine, the KubeRay schema helpers. Test modules import these, never each other."""
