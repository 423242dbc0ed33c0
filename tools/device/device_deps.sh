# Sourced by the device scripts (cuda_check.sh, train_bisect.sh) with $stage set: unpacks the Debian
# packages' files that cuda_bundle.sh staged (deps.tar.xz) into / without overwriting anything the
# machine has, and points libz.so at the machine's libz.so.1 (Debian's points at its own version).
tar -xJf "$stage/deps.tar.xz" --skip-old-files -C / && ldconfig
z=/usr/lib/x86_64-linux-gnu/libz.so
[ -e "$z" ] ||
  ln -sf "$(ls /usr/lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1 2>/dev/null | head -1)" "$z"
