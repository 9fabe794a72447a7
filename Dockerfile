# mailboot: Postfix, Dovecot, OpenDKIM, OpenDMARC and Unbound configured by a Python entrypoint.
# Everything comes from Debian's packages (security updates included); PyPI is not used.
# libsasl2-modules: the PLAIN and LOGIN mechanisms Postfix uses to log in to a RELAY_HOST.
# dovecot-managesieved: ManageSieve, with which mail clients upload their Sieve filters.
# dbconfig-no-thanks: OpenDMARC's report database is not used; without it, apt satisfies
# OpenDMARC's "dbconfig-mysql | dbconfig-no-thanks" with the MariaDB client and Perl (130 MB).
# The image stays slim as Debian's own slim images do: dpkg never unpacks what a server does not
# read (documentation, manuals, info pages, translations), and the install leaves no package
# cache behind (without `apt-get clean`, the .debs and apt's two binary caches were 127 MB of
# the layer). Python's compiled bytecode stays: without it a start takes a second longer.
# Beyond that, what no process here loads is left out (the lists below, each with its reason):
# with ICU's trimmed data, the image is 43 MB smaller (140 MB to 97 MB over debian:trixie-slim).
# tests/container/test_image.py checks that the daemons still pass their own checks, that every
# command we run still works, and that what was left out stays out.

# ICU's data, trimmed. libicudata.so.76 is one 31.8 MB array (icudt76_dat) of 4,136 items:
# converters, collation, break rules, transliterators, time zones, character names and the
# locale data of 800 locales. Postfix calls only uidna_*UTS46 (IDNA, smtputf8) and
# ucasemap_utf8FoldCase; Dovecot only ucasemap_utf8ToLower and u_strFromUTF8/ToUTF8, plus the
# transliterator of its fts plugins, which mailboot does not load (`nm -D --undefined-only`).
# Their case, bidi, property and NFC data is compiled into libicuuc; of the data file they read
# uts46.nrm alone (the Unicode tests below pass with only that item). The stage below keeps the
# character data, nothing of a locale: every normalization (*.nrm: UTS #46, NFKC and its case
# folds), the stringprep profiles (*.spp) and the emoji and layout properties; 17 items, 0.5 MB.
# It rebuilds the library with the same soname and symbol from the same Debian package, so ICU
# finds its data where it always does; the install below never unpacks Debian's copy.
FROM debian:trixie-slim AS icu-data

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build

# Versions are not pinned (DL3008): the libicu76 the install below takes, from the same mirror.
# hadolint ignore=DL3008
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libicu76 icu-devtools binutils; \
    library=$(dpkg -L libicu76 | grep '/libicudata[.]so[.]76[.]1$'); \
    # The array is the symbol's bytes: its offset in the file is its address minus that of the
    # section holding it (.rodata), whose file offset readelf gives.
    read -r address size < <(nm -D -S --defined-only "$library" \
        | awk '$4 == "icudt76_dat" { print $1, $2 }'); \
    read -r section offset < <(readelf -W -S "$library" \
        | awk '$2 == ".rodata" { print $4, $5 }'); \
    mkdir full; \
    tail -c +$(( 0x$offset + 0x$address - 0x$section + 1 )) "$library" \
        | head -c $(( 0x$size )) > full/icudt76l.dat; \
    icupkg -l full/icudt76l.dat > items.txt; \
    grep -v -E '[.](nrm|spp)$|^(uemoji|ulayout)[.]icu$' items.txt > remove.txt; \
    # icupkg names the items after the output file (icudt76l/uts46.nrm), as ICU looks them up.
    icupkg -r remove.txt full/icudt76l.dat icudt76l.dat; \
    grep -q -a -F 'icudt76l/uts46.nrm' icudt76l.dat; \
    printf '%s\n' '.section .rodata' '.globl icudt76_dat' '.type icudt76_dat, %object' \
        '.balign 16' 'icudt76_dat:' '.incbin "icudt76l.dat"' \
        '.size icudt76_dat, . - icudt76_dat' '.section .note.GNU-stack,"",%progbits' > data.s; \
    as -o data.o data.s; \
    mkdir -p "/out$(dirname "$library")"; \
    ld -shared -soname libicudata.so.76 -z noexecstack -o "/out$library" data.o; \
    # ICU opens the new library's package by its name, and the library holds the trimmed file.
    LD_LIBRARY_PATH="/out$(dirname "$library")" icuinfo | grep -q 'name="icudata.name">icudt76l<'; \
    objcopy -O binary --only-section=.rodata "/out$library" built.dat; \
    cmp -n "$(stat -c %s icudt76l.dat)" icudt76l.dat built.dat

FROM debian:trixie-slim

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Before dpkg installs libicu76, which leaves this file alone (path-exclude below).
COPY --from=icu-data /out/ /

# Versions are not pinned on purpose (DL3008): we follow Debian trixie's security updates.
# hadolint ignore=DL3008
RUN set -eux; \
    # Before the install, so that these paths are never written (a later `rm` in this layer would
    # work too, but the rule stays for anything installed on top of this image). The copyright
    # files stay; C.UTF-8 is in /usr/lib/locale, which is kept.
    printf '%s\n' \
        'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
        'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' \
        'path-exclude=/usr/share/locale/*' 'path-include=/usr/share/locale/locale.alias' \
        'path-exclude=/usr/share/lintian/*' 'path-exclude=/usr/share/doc-base/*' \
        'path-exclude=/usr/share/bug/*' \
        > /etc/dpkg/dpkg.cfg.d/mailboot-slim; \
    # Libraries nothing here loads (`readelf -d` over every binary and library of the image):
    # Debian's ICU data, replaced by the trimmed copy above; ICU's io, test and tool libraries
    # (for icu-devtools, not installed); Lua 5.4 (only Dovecot's Lua plugins and their libraries
    # link it, and mailboot loads none) and both C++ builds of Lua (OpenDKIM links the C one);
    # the language models of Dovecot's full-text search (libexttextcat reads them only for fts);
    # tini's static build (the ENTRYPOINT runs /usr/bin/tini).
    # `dpkg -V` lists these, like the documentation, as missing; `apt-get install` is unaffected.
    printf '%s\n' \
        'path-exclude=/usr/lib/*/libicudata.so.76.1' 'path-exclude=/usr/lib/*/libicuio.so.*' \
        'path-exclude=/usr/lib/*/libicutest.so.*' 'path-exclude=/usr/lib/*/libicutu.so.*' \
        'path-exclude=/usr/lib/*/liblua5.4.so*' 'path-exclude=/usr/lib/*/liblua5.?-c++.so*' \
        'path-exclude=/usr/lib/dovecot/libdovecot-lua.so*' \
        'path-exclude=/usr/lib/dovecot/libdovecot-storage-lua.so*' \
        'path-exclude=/usr/lib/dovecot/modules/*_lua_plugin.so' \
        'path-exclude=/usr/share/libexttextcat/*' 'path-exclude=/usr/bin/tini-static' \
        > /etc/dpkg/dpkg.cfg.d/mailboot-unused; \
    # Fixed ids: files on the volume keep their owners when a new image is built (Debian would
    # otherwise pick the next free ids at install time, and they can differ between builds).
    groupadd --system --gid 200 postfix; groupadd --system --gid 201 postdrop; \
    useradd --system --uid 200 --gid 200 --home-dir /var/spool/postfix --no-create-home \
        --shell /usr/sbin/nologin postfix; \
    groupadd --system --gid 202 opendkim; \
    useradd --system --uid 202 --gid 202 --home-dir /run/opendkim --no-create-home \
        --shell /usr/sbin/nologin opendkim; \
    groupadd --system --gid 203 dovecot; \
    useradd --system --uid 203 --gid 203 --home-dir /usr/lib/dovecot --no-create-home \
        --shell /usr/sbin/nologin dovecot; \
    groupadd --system --gid 204 dovenull; \
    useradd --system --uid 204 --gid 204 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin dovenull; \
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        postfix libsasl2-modules dovecot-core dovecot-imapd dovecot-lmtpd opendkim \
        unbound dns-root-data opendmarc dbconfig-no-thanks publicsuffix dovecot-sieve \
        dovecot-managesieved \
        bogofilter-sqlite \
        python3 python3-acme python3-josepy python3-dnspython python3-cryptography \
        python3-jinja2 python3-idna python3-spf python3-dkim tini openssl ca-certificates; \
    # The downloaded .debs, apt's package caches and lists, and the backups dpkg and debconf keep
    # of their own databases: apt rebuilds the caches on the next `apt-get update`.
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/lib/dpkg/*-old; \
    # Python that nothing here imports, with its bytecode (Debian compiles it after the unpack,
    # so dpkg's path rules cannot keep it out). No import of mailboot, of what it imports (acme,
    # dkim, spf, dns, cryptography, jinja2, requests) or of their imports reaches these outside a
    # test or a `__main__` block: the standard library's tests and test runners, the help texts
    # of help(), turtle graphics, venv, WSGI, curses and dbm, the test extension modules; the
    # pure-Python copies of _io, _datetime and _decimal (imported only when the C module is
    # missing, and it is here); pytz (python3-acme still depends on it, acme 4 no longer imports
    # it) and chardet (requests takes charset_normalizer when chardet is absent), bcrypt
    # (cryptography imports it in a try, for encrypted OpenSSH keys only), acme's own tests.
    python=/usr/lib/python3.13; \
    rm -rf "$python"/test "$python"/pydoc_data "$python"/unittest "$python"/venv \
        "$python"/wsgiref "$python"/curses "$python"/dbm "$python"/__phello__ \
        "$python"/lib-dynload/_test*.so "$python"/lib-dynload/_ctypes_test.*.so \
        "$python"/lib-dynload/xx*.so "$python"/lib-dynload/_xxtestfuzz.*.so \
        "$python"/lib-dynload/_curses*.so "$python"/lib-dynload/_dbm.*.so \
        /usr/lib/python3/dist-packages/pytz /usr/lib/python3/dist-packages/pytz-*.egg-info \
        /usr/lib/python3/dist-packages/chardet /usr/lib/python3/dist-packages/chardet-*.dist-info \
        /usr/lib/python3/dist-packages/bcrypt /usr/lib/python3/dist-packages/bcrypt-*-info \
        /usr/bin/chardetect /usr/lib/python3/dist-packages/acme/_internal/tests; \
    for module in doctest turtle antigravity this __hello__ shelve _pyio _pydatetime \
        _pydecimal; do \
        rm "$python/$module.py" "$python"/__pycache__/"$module".cpython-313*.pyc; \
    done; \
    rm -rf /etc/dovecot/conf.d /etc/postfix/main.cf; \
    # `postfix set-permissions` (mailboot runs it when the queue on /data is incomplete) walks the
    # files listed in postfix-files and stops at the first one missing: the manual pages are not
    # installed, so they leave the list (Alpine's package does the same).
    sed -i '/^[$]manpage_directory\//d' /etc/postfix/postfix-files; \
    groupadd --system --gid 5000 vmail; \
    useradd --system --uid 5000 --gid 5000 --home-dir /data/mail --no-create-home \
        --shell /usr/sbin/nologin vmail; \
    # Our port-25 policy processes (Postfix's spawn service): a user of their own, not nobody.
    groupadd --system --gid 205 mailpolicy; \
    useradd --system --uid 205 --gid 205 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin mailpolicy

COPY mailboot /opt/mailboot/mailboot
COPY templates /opt/mailboot/templates
COPY entrypoint.py /opt/mailboot/entrypoint.py
RUN printf '#!/bin/sh\nexec /usr/bin/python3 -P /opt/mailboot/entrypoint.py "$@"\n' \
        > /usr/local/bin/mailboot \
    && chmod 0755 /usr/local/bin/mailboot \
    && python3 -m compileall -q /opt/mailboot

ENV PYTHONPATH=/opt/mailboot PYTHONDONTWRITEBYTECODE=1

# 25: inbound SMTP from other mail servers (STARTTLS offered, no relaying)
# 465: submission for mail clients, implicit TLS, authentication required (RFC 8314)
# 587: submission for mail clients, STARTTLS required, authentication required (RFC 6409)
# 993: IMAP for mail clients, implicit TLS
# 4190: ManageSieve (RFC 5804) for mail clients' filters and vacation replies, STARTTLS required
# 80: ACME HTTP-01 challenges (certificates); our own names are redirected to 443
# 443: the MTA-STS policy (https://mta-sts.<domain>/.well-known/mta-sts.txt) and the mail
#      clients' settings (autoconfig, autodiscover, an Apple profile)
EXPOSE 25 465 587 993 4190 80 443

# Keys, certificates, mailboxes, the mail queue and accounts: all state lives here.
VOLUME ["/data"]

# Healthy once SMTP on 25 and IMAPS on 993 answer: the health module alone (mailboot/health.py),
# not the whole command line, every 20 s. (--start-interval would report health sooner, but
# Docker's legacy builder, still common, rejects it.)
HEALTHCHECK --interval=20s --timeout=10s --start-period=60s --retries=3 \
    CMD ["/usr/bin/python3", "-P", "-m", "mailboot.health"]

# tini is PID 1: it reaps zombies and forwards docker stop's SIGTERM to our supervisor.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/mailboot"]
CMD ["run"]

# OCI annotations (github.com/opencontainers/image-spec, annotations.md), read with
# `docker image inspect`. Last, and each ARG just before its use: a build argument takes part in
# the cache key only of the steps after it, so a new REVISION at every commit changes this
# metadata alone and never rebuilds the layers above. VERSION's default is mailboot.__version__
# (tests/test_dockerfile.py holds them equal); REVISION is the commit, which the tests and the
# benchmarks pass (`--build-arg REVISION=$(git rev-parse HEAD)`). No `created`: Docker already
# records the build time (`docker image inspect -f '{{.Created}}'`), and a label holding it would
# make every build a new image. No `source`: the project publishes no repository address yet.
ARG VERSION=0.2.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mailboot" \
      org.opencontainers.image.description="One container that turns a bare Linux server and a domain into a working, secure mail server" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT"
