#!/bin/busybox sh
# PID 1 of the test-bed VM.  Loads the modules, makes the host's / (read-only, over 9p) the root
# with the writable .out share at its host path, runs the command chrooted there, writes its exit
# status to the control share and powers off.  No status file means this script failed: the
# host reports it (exit 125) and the reason is on the console above.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
	echo "testbed init: $*" >&2
	poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Raw newlines: the command's output goes to the host's stdout, not to a terminal emulator.
stty -F /dev/ttyS0 -onlcr

while read -r ko params; do
	# shellcheck disable=SC2086  # params is a word list
	insmod "/modules/$ko" $params || fail "insmod $ko $params failed"
done </modules/order

p9="trans=virtio,version=9p2000.L,msize=524288"
mount -t 9p -o "$p9" testbedctl /ctl || fail "cannot mount the control share"
# TESTBED_OUT: host path of the writable share; TESTBED_KEEP: the working directory when it
# lives under /tmp, /run or /dev/shm, bound back over the guest's tmpfs there.  Written by the
# host (testbed/qemu.py).
. /ctl/boot.env

R=/newroot
mount -t 9p -o "$p9,ro,cache=loose" hostroot $R || fail "cannot mount the host's / over 9p"
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
if [ -n "$TESTBED_KEEP" ]; then
	mkdir -p /keep && mount -o bind "$R$TESTBED_KEEP" /keep || fail "cannot keep $TESTBED_KEEP"
fi
for d in /tmp /run /dev/shm; do
	mount -t tmpfs tmpfs "$R$d" || fail "cannot mount tmpfs on $d"
done
if [ -n "$TESTBED_KEEP" ]; then
	mkdir -p "$R$TESTBED_KEEP" && mount -o bind /keep "$R$TESTBED_KEEP" ||
		fail "cannot bind $TESTBED_KEEP back over the guest's tmpfs"
fi
mount -t 9p -o "$p9" testbedout "$R$TESTBED_OUT" || fail "cannot mount $TESTBED_OUT"
mount -t configfs configfs $R/sys/kernel/config || fail "cannot mount configfs"

# The loopback interface, for servers and clients in the guest (NBD over TCP on 127.0.0.1).
ifconfig lo 127.0.0.1 up || fail "cannot bring up lo"

cp /ctl/cmd.sh $R/run/testbed-cmd.sh
chroot $R /bin/sh /run/testbed-cmd.sh </dev/null >/dev/ttyS0 2>&1
echo $? >/ctl/status

# "quiet" keeps the kernel's warnings (and its boot-time timer grumbles) off the console, but a
# driver's test bed must show a WARN, BUG or oops that the command provoked.
splat='(WARNING:|BUG:|Oops|general protection fault|blocked for more than)'
if dmesg | grep -qE "$splat"; then
	echo "testbed: the kernel reported problems during the run:"
	dmesg | grep -E -A24 "$splat"
fi
echo 0 >/proc/sys/kernel/printk # no "reboot: Power down" after the command's output
poweroff -f
