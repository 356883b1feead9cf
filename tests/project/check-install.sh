#!/bin/sh
# Installs into a scratch prefix and builds a program against it with pkg-config,
# as a user of the library would.
set -eu
build=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
pc=$(find "$prefix" -name twine.pc)
[ -n "$pc" ] || { echo "twine.pc not installed"; exit 1; }
# The .pc file names the configured prefix; point pkg-config at the scratch one.
export PKG_CONFIG_PATH=$(dirname "$pc")
cat > "$prefix/hello.c" <<'C'
#include <twine/twine.h>
#include <stdio.h>
static tw_result shout(tw_result r, void *arg) { (void)arg; printf("got %s\n", (char *)r.value); return r; }
int main(void) {
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, shout, NULL);
    tw_deferred_callback(d, tw_result_borrowed("it"));
    tw_deferred_unref(d);
    return 0;
}
C
cc $(pkg-config --define-variable=prefix="$prefix" --cflags twine) -o "$prefix/hello" "$prefix/hello.c" \
   $(pkg-config --define-variable=prefix="$prefix" --libs --static twine)
out=$("$prefix/hello")
[ "$out" = "got it" ] || { echo "unexpected output: $out"; exit 1; }
echo "install: headers, library and twine.pc work from $prefix"
