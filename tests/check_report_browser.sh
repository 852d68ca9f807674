#!/bin/sh
# The run report in a real browser: a short run's report.html opened by headless Chromium
# from file://, its DOM after the page's script ran. Checks that the script ran (the grid
# slider's label is filled in), that every image decoded (naturalWidth > 0, written into the
# DOM by the check's own script) and that the charts are there. Run by ctest where chromium
# is installed: CHROMIUM WEFT GRAPH
set -eu
chromium=$1 weft=$2 graph=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$weft" train "$graph" --steps 12 --sample-every 4 --checkpoint-every 6 --quiet --out "$dir/run"
# The page's own script runs on load; this one, appended, records what the browser decoded.
cp "$dir/run/report.html" "$dir/page.html"
cat >> "$dir/page.html" <<'JS'
<script>window.addEventListener('load',function(){var i=document.images,ok=0;
for(var k=0;k<i.length;k++)if(i[k].complete&&i[k].naturalWidth>0)ok++;
document.body.setAttribute('data-decoded',ok+'/'+i.length);});</script>
JS
dom=$("$chromium" --headless --no-sandbox --disable-gpu --virtual-time-budget=3000 \
  --dump-dom "file://$dir/page.html" 2>/dev/null)
fail=0
check() { echo "$dom" | grep -q "$1" || { echo "FAIL: the page has no $2"; fail=1; }; }
check '<span id="gridstep">step 12</span>' "slider label set by its script (step 12)"
check 'data-decoded="3/3"' "three decoded images (the grids of steps 4 and 8, and the last)"
check '<title>d_loss</title>' "d_loss chart"
check 'Finished: 12 steps.' "finished banner"
[ $fail = 0 ] && echo "the report renders in $("$chromium" --version 2>/dev/null | head -1)"
exit $fail
