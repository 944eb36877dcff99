; Inno Setup script for Windows (not built or tested on the Linux CI machine; see README).
; Build: pyinstaller build.spec on Windows, then: iscc installer\windows\custodian.iss
; Same layout as the Linux package: the program under Program Files, the managed site policy
; under %ProgramData%\Custodian (writable by administrators only). Service mode: install-service.ps1,
; run by an administrator after `custodian init --service`, registers the service (see its header).
#define AppVersion "0.1.0"

[Setup]
AppId={{6C1D3F4E-9B1A-4E57-9D0B-3C2A7F1E5B21}
AppName=Custodian
AppVersion={#AppVersion}
DefaultDirName={autopf}\Custodian
DefaultGroupName=Custodian
OutputBaseFilename=custodian-{#AppVersion}-setup
PrivilegesRequired=admin
ArchitecturesInstallIn64BitMode=x64compatible
Compression=lzma2
SolidCompression=yes

[Files]
Source: "..\..\dist\custodian\*"; DestDir: "{app}"; Flags: recursesubdirs ignoreversion
Source: "install-service.ps1"; DestDir: "{app}"; Flags: ignoreversion

[Dirs]
; Only administrators may write the site policy folder.
Name: "{commonappdata}\Custodian"; Permissions: admins-full system-full users-readexec

[Icons]
Name: "{group}\Custodian"; Filename: "{app}\custodian.exe"; Parameters: "gui"

[Run]
Filename: "{app}\custodian.exe"; Parameters: "selftest --offline"; Flags: runhidden waituntilterminated; StatusMsg: "Checking the installation..."
