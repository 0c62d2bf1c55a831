"""Testing kit for plugin authors (opt-in pytest plugin: ``-p sdl_core.testing``).

Public pieces: :func:`make_host`, :class:`InProcessMesh`, and the contract suites
``StoreContract``, ``RelayBackendContract``, ``SignerContract``, ``SkillContract``
(import them from their modules under ``sdl_core.testing``).
"""
