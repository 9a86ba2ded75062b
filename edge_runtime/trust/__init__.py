"""Trust: keys and signatures, over-the-air updates, signed remote commands, the self-test.

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.trust.command_cli import (
        add_command_arguments as add_command_arguments,
    )
    from edge_runtime.trust.command_cli import (
        parse_command_args as parse_command_args,
    )
    from edge_runtime.trust.command_cli import (
        run_command as run_command,
    )
    from edge_runtime.trust.command_cli import (
        send_command as send_command,
    )
    from edge_runtime.trust.command_verify import (
        CommandVerifier as CommandVerifier,
    )
    from edge_runtime.trust.command_verify import (
        NonceStore as NonceStore,
    )
    from edge_runtime.trust.command_verify import (
        canonical_body as canonical_body,
    )
    from edge_runtime.trust.command_verify import (
        encode_command as encode_command,
    )
    from edge_runtime.trust.command_verify import (
        sign_command as sign_command,
    )
    from edge_runtime.trust.commands import (
        COMMANDS as COMMANDS,
    )
    from edge_runtime.trust.commands import (
        REASONS as REASONS,
    )
    from edge_runtime.trust.commands import (
        ArgSpec as ArgSpec,
    )
    from edge_runtime.trust.commands import (
        Command as Command,
    )
    from edge_runtime.trust.commands import (
        CommandProcessor as CommandProcessor,
    )
    from edge_runtime.trust.commands import (
        CommandRejected as CommandRejected,
    )
    from edge_runtime.trust.commands import (
        CommandSpec as CommandSpec,
    )
    from edge_runtime.trust.commands import (
        Controller as Controller,
    )
    from edge_runtime.trust.commands import (
        check_args as check_args,
    )
    from edge_runtime.trust.keys import (
        KeyFileError as KeyFileError,
    )
    from edge_runtime.trust.keys import (
        PublicKey as PublicKey,
    )
    from edge_runtime.trust.keys import (
        decode_signature as decode_signature,
    )
    from edge_runtime.trust.keys import (
        encode_signature as encode_signature,
    )
    from edge_runtime.trust.keys import (
        generate_keypair as generate_keypair,
    )
    from edge_runtime.trust.keys import (
        load_private_key as load_private_key,
    )
    from edge_runtime.trust.keys import (
        load_public_keys as load_public_keys,
    )
    from edge_runtime.trust.keys import (
        public_key_from_pem as public_key_from_pem,
    )
    from edge_runtime.trust.keys import (
        public_key_of as public_key_of,
    )
    from edge_runtime.trust.keys import (
        sign as sign,
    )
    from edge_runtime.trust.keys import (
        verify as verify,
    )
    from edge_runtime.trust.selftest import (
        HeadCheck as HeadCheck,
    )
    from edge_runtime.trust.selftest import (
        SelfTestError as SelfTestError,
    )
    from edge_runtime.trust.selftest import (
        SelfTestReport as SelfTestReport,
    )
    from edge_runtime.trust.selftest import (
        SelfTestSpec as SelfTestSpec,
    )
    from edge_runtime.trust.selftest import (
        check_selftest as check_selftest,
    )
    from edge_runtime.trust.selftest import (
        run_selftest as run_selftest,
    )
    from edge_runtime.trust.signatures import (
        MAX_SIGNATURE_BYTES as MAX_SIGNATURE_BYTES,
    )
    from edge_runtime.trust.signatures import (
        SIGNATURE_NAME as SIGNATURE_NAME,
    )
    from edge_runtime.trust.signatures import (
        SignatureError as SignatureError,
    )
    from edge_runtime.trust.signatures import (
        check_manifest_signature as check_manifest_signature,
    )
    from edge_runtime.trust.signatures import (
        parse_signature as parse_signature,
    )
    from edge_runtime.trust.signatures import (
        read_signature as read_signature,
    )
    from edge_runtime.trust.signatures import (
        signature_state as signature_state,
    )
    from edge_runtime.trust.signatures import (
        verify_bundle_signature as verify_bundle_signature,
    )
    from edge_runtime.trust.update_cli import (
        add_update_arguments as add_update_arguments,
    )
    from edge_runtime.trust.update_cli import (
        run_update as run_update,
    )
    from edge_runtime.trust.update_install import (
        UpdateOutcome as UpdateOutcome,
    )
    from edge_runtime.trust.update_install import (
        install_update as install_update,
    )
    from edge_runtime.trust.update_package import (
        MAX_MEMBERS as MAX_MEMBERS,
    )
    from edge_runtime.trust.update_package import (
        TARBALL_SUFFIXES as TARBALL_SUFFIXES,
    )
    from edge_runtime.trust.update_package import (
        Package as Package,
    )
    from edge_runtime.trust.update_package import (
        PackageError as PackageError,
    )
    from edge_runtime.trust.update_package import (
        open_package as open_package,
    )
    from edge_runtime.trust.update_package import (
        stage_package as stage_package,
    )
    from edge_runtime.trust.updates import (
        Slots as Slots,
    )
    from edge_runtime.trust.updates import (
        UpdateError as UpdateError,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "command_cli": ("add_command_arguments", "parse_command_args", "send_command", "run_command"),
        "command_verify": ("CommandVerifier", "NonceStore", "canonical_body", "encode_command", "sign_command"),
        "commands": (
            "COMMANDS",
            "REASONS",
            "ArgSpec",
            "Command",
            "CommandProcessor",
            "CommandRejected",
            "CommandSpec",
            "Controller",
            "check_args",
        ),
        "keys": (
            "KeyFileError",
            "PublicKey",
            "public_key_from_pem",
            "load_public_keys",
            "load_private_key",
            "generate_keypair",
            "public_key_of",
            "sign",
            "encode_signature",
            "decode_signature",
            "verify",
        ),
        "selftest": ("HeadCheck", "SelfTestError", "SelfTestReport", "SelfTestSpec", "check_selftest", "run_selftest"),
        "signatures": (
            "MAX_SIGNATURE_BYTES",
            "SIGNATURE_NAME",
            "SignatureError",
            "check_manifest_signature",
            "parse_signature",
            "read_signature",
            "signature_state",
            "verify_bundle_signature",
        ),
        "update_cli": ("add_update_arguments", "run_update"),
        "update_package": (
            "MAX_MEMBERS",
            "TARBALL_SUFFIXES",
            "Package",
            "PackageError",
            "open_package",
            "stage_package",
        ),
        "update_install": ("UpdateOutcome", "install_update"),
        "updates": ("UpdateError", "Slots"),
    },
)
