#!/usr/bin/env bash
# How this pack is built from open data, by data alone (no code names the region):
#   twin/regions/kiel/build.sh [OUT] [DATA]
# OUT defaults to this folder; DATA (the municipality's files as published) to this folder's sources/.
# The shoreline is the pack's GSHHG extract (the same file as ../shared/data/gshhg_full_kiel_fjord.txt).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE}"
DATA="${2:-$HERE/sources}"
PLIETSCH="${PLIETSCH:-plietsch}"
SHORE="$OUT/shoreline_gshhg.txt"
[ -f "$SHORE" ] || SHORE="$HERE/shoreline_gshhg.txt"
$PLIETSCH region new --out "$OUT" --id kiel --name "Kiel (KielRegion)" \
  --districts "$DATA/kiel_stadtteile.geojson" \
  --districts-source "Landeshauptstadt Kiel, statistical districts (Stadtteile), city map service ims.kiel.de (Stadtplan LHKielWmsWfs layer 38), via github.com/1959124923wyz-sys/German-Map" \
  --districts-licence CC-BY-4.0 \
  --population "$DATA/kiel_einwohner_stadtteile_1988_2021.csv" \
  --population-source "Landeshauptstadt Kiel open data and statistical yearbooks, compiled in github.com/patperu/kfzkiel (Patrick Hausmann 2022)" \
  --population-licence MIT \
  --source-file "$DATA/kiel_kfz_einwohner_stadtteile_2011_2021.csv" \
  --attribution "Registered vehicles per district (\`sources/kiel_kfz_einwohner_stadtteile_2011_2021.csv\`, kept for reference, not used yet): github.com/patperu/kfzkiel (Patrick Hausmann 2022), MIT." \
  --shoreline "$SHORE" --bbox 10.00,54.28,10.35,54.50 --sea-point 10.16,54.36 \
  --shoreline-note "extracted with GMT 6 (gmt coast -R10.00/10.35/54.28/54.50 -Df -W -M)" \
  --mean-water-level-note "Heights are metres above mean water level (Kiel-Holtenau MW about 504 cm above gauge zero)." \
  --quarter "Gaarden=12,13:quay_wall:2.1" --quarter "Friedrichsort=20:dike:2.6" \
  --gauge "holtenau:Kiel-Holtenau#9610066=54.37208,10.15704" --gauge "leuchtturm:Kiel Leuchtturm#9610050=54.49959,10.27326" \
  --air-quality "Kiel-Bahnhofstraße#DESH027=54.304676,10.135158" \
  --air-quality "Kiel-Theodor-Heuss-Ring#DESH052=54.304242,10.122364" \
  --air-quality "Kiel-Bremerskamp#DESH057=54.34761,10.1056" \
  --surge "kiel-2023-10-20=2023-10-20T19:33:00+00:00,1.95,14" \
  --surge-source "BSH: storm surge of 20 Oct 2023, Kiel about 1.95 m above mean water level (21:33 local)" \
  --surge-note "peak at the Kiel-Holtenau gauge; the curve around it is the twin's synthetic surge shape"
$PLIETSCH region synth --out "$OUT"
