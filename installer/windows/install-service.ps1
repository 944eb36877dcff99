# Custodian's workstation service on Windows (written to the Linux package's layout, not tested here).
# The service runs as its virtual account NT SERVICE\Custodian (no password, no interactive logon),
# its vault in %ProgramData%\Custodian\Service readable by that account and SYSTEM only; clients in
# the local group "Custodian Users" connect over the named pipe \\.\pipe\custodian, whose DACL the
# program sets from --group (the Unix socket's 0660 + group).
#
# A virtual account cannot run a command interactively, so an administrator makes the vault and
# this script then hands the folder to the service (Administrators can always take ownership back:
# the boundary here is against the reading-room users). As administrator, from the program folder:
#   .\custodian.exe init --service --admin NAME --home "$env:ProgramData\Custodian\Service"
#   powershell -ExecutionPolicy Bypass -File .\install-service.ps1 -Users 'DOMAIN\alice','DOMAIN\bob'
#   setx /M CUSTODIAN_SOCKET \\.\pipe\custodian      # what clients use instead of a home
# Not done yet: `custodian service` must answer the service control manager (pywin32's
# servicemanager) when started as a service; until it does, run it under a wrapper such as WinSW.
param([string[]]$Users = @())
$ErrorActionPreference = 'Stop'

$exe = Join-Path $PSScriptRoot 'custodian.exe'
$data = Join-Path $env:ProgramData 'Custodian\Service'
$group = 'Custodian Users'

if (-not (Test-Path (Join-Path $data 'keystore.json'))) {
    throw "No service vault in $data yet: make it first (custodian init --service, see the top of this script)."
}
if (-not (Get-LocalGroup -Name $group -ErrorAction SilentlyContinue)) {
    New-LocalGroup -Name $group -Description 'May connect to the Custodian workstation service' | Out-Null
}
foreach ($user in $Users) { Add-LocalGroupMember -Group $group -Member $user -ErrorAction SilentlyContinue }

if (-not (Get-Service -Name Custodian -ErrorAction SilentlyContinue)) {
    New-Service -Name Custodian -DisplayName 'Custodian workstation service' -StartupType Automatic `
        -BinaryPathName "`"$exe`" service --home `"$data`" --socket \\.\pipe\custodian --group `"$group`"" | Out-Null
}
sc.exe config Custodian obj= 'NT SERVICE\Custodian' | Out-Null
# Restarted on failure, as Restart=on-failure.
sc.exe failure Custodian reset= 86400 actions= restart/5000/restart/5000/restart/60000 | Out-Null

# The vault's folder: the service's account and SYSTEM only, nothing inherited from ProgramData
# (whose Users may read the site policy next to it).
icacls $data /setowner 'NT SERVICE\Custodian' /T /Q | Out-Null
icacls $data /inheritance:r /grant:r 'NT SERVICE\Custodian:(OI)(CI)F' 'SYSTEM:(OI)(CI)F' /T /Q | Out-Null

Start-Service -Name Custodian
