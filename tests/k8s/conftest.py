"""The Kubernetes side: rendered RayService manifests and Serve configs checked against the
profiles and KubeRay's schema (tests/support/k8s_docs.py), the images' Dockerfiles, the model
Job and its fill script. Unit tier: nothing is deployed."""
