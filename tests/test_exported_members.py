import llmgather


def test_all_exports_resolve_and_are_sorted() -> None:
    assert llmgather.__all__ == sorted(llmgather.__all__)
    for name in llmgather.__all__:
        assert getattr(llmgather, name) is not None


def test_public_members_are_all_exported() -> None:
    public = {name for name in llmgather._HOMES}
    assert public | {"__version__"} == set(llmgather.__all__)
