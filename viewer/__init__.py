"""The CesiumJS viewer and the Info-Cube kiosk page (static), plus a cesiumpy scene builder."""
