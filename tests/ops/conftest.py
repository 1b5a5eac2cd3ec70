"""Shared by the op tests: every test that takes ``device`` runs on the CPU and, where torch sees a GPU,
on CUDA as well."""

import torch


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
